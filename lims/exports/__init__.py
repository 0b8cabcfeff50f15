"""Exports in open formats (CSV, XLSX, PDF): the freezer inventory, for staff and researchers."""
