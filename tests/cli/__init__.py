"""Tests of the `perseus` command line."""
