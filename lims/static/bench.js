// The bench scan script comes with the scan page.
