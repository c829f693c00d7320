"""The conversion spec's rules: the documented ones in the library's wording (rules), and the
checks that need the model and the datasets (checks)."""
