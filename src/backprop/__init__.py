"""The backprop-by-hand task: the numpy network, its runs and sweep report, the live Excel workbook."""
