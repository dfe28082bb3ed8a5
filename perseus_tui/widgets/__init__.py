"""The dashboard's widgets, one public widget per module."""
