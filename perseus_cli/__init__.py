"""The `perseus` command line: read-side verbs, operator verbs, agent, demo and dashboard."""
