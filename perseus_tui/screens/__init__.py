"""The dashboard's screens: the fleet, one exchange in detail, help, and confirmation."""
