"""Orchestration: CLI, data ingestion, frames, sweeps, verification, reports."""
