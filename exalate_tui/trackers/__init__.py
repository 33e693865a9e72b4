"""The ticket systems an instance fronts, behind one interface (`adapter.Tracker`)."""
