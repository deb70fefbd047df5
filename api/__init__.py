"""Nexus Backup: the database and the uploads of a web application, as one verified archive."""

__version__ = "0.1.0"
