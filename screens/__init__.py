"""Textual screens: one module and one `.tcss` per wizard step, plus the Connections tab."""
