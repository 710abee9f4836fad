"""VPRAG, the baselines, composers, image generators and the LangGraph agent (uses stores and evaluators)."""
