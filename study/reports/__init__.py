"""Reports: run files, plots, and the study report of a hunt folder (``build_report``)."""
