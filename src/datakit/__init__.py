"""datakit: image-classification datasets from web image search, curated, versioned and
evaluated. See README.md; the command line is `datakit --help`."""

__version__ = "0.1.0"
__all__ = ["__version__"]
