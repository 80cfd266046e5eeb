"""Text shipped with sbexport: calibration_en.tsv (int8 calibration) and guard_en.tsv (the
accuracy guard's real sentences), tab-separated pairs, written for this project."""
