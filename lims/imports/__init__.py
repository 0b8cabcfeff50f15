"""Imports from CSV/XLSX files: a whole freezer layout, and an existing inventory of tubes."""
