"""Reading back what training wrote: run histories, test results, plots and reports."""
