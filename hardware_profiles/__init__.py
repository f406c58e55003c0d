"""hardware_profiles package."""
