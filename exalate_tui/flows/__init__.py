"""The wizards: pure state machines the console's screens and the CLI both drive.

`initiate` (InitiateWizard) and `accept` (AcceptWizard) hold each flow's
state and rules; they do no I/O and import neither Textual nor the network:
what they need is handed in, what they decide is stored by the caller.
"""
