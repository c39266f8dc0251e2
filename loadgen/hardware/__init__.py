"""Hardware knowledge shared by the specs, the emulator and the analysis: cited profiles and the performance model."""
