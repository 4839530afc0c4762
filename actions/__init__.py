"""Custom actions of the Heze Citizen Assistant, one module per flow.

Actions receive their backends in the constructor; ``actions.registry.build_actions`` wires
them and ``actions.server`` serves them over Rasa's action-server HTTP protocol."""
