"""Barcode labels: templates as data (``labels/*.toml``), their content, PDF and ZPL output.

``templates`` reads and checks the label stocks, ``content`` fills one label from an item, box
or shipment (patient identifiers only where the template asks and the reader may see them),
``layout`` places the text and codes once for both outputs, ``pdf`` and ``zpl`` draw them and
``render`` is the one entry point the print pages call.
"""

import contextlib
import warnings

# pylibdmtx checks libdmtx's version with distutils' LooseVersion, which warns on import; and
# ReportLab's barcode package imports pylibdmtx whenever it is installed (for its own Data
# Matrix widget), so the box map and the history report would trip the test suite's
# warnings-as-errors too. Importing it once here, quietly, settles it for the whole app:
# ``lims.models`` imports this package before any blueprint. Without libdmtx the labels say
# so when a Data Matrix is drawn (``lims.labels.layout.libdmtx``).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    # Without libdmtx0b (a documented system dependency) only Data Matrix labels fail.
    with contextlib.suppress(ImportError):
        import pylibdmtx.pylibdmtx  # noqa: F401
