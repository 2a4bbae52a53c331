"""The ``htpdata`` command line: thin, it calls the library and prints."""
