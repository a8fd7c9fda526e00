"""Applications built on geopath and models: one package per experiment (``python -m experiments.<name>``)."""
