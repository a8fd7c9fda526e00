"""Implementation modules of geopath. The public API is re-exported from :mod:`geopath`."""
