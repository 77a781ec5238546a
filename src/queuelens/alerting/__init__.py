"""Alerting: rules over queuelens analytics, their evaluation and notification channels."""
