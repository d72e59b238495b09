"""AI Orchestrator Hub: the multi-agent hive service (`multiagent-hive`)."""

__version__ = "1.0.0"
