"""Pass@k / Mean@k metrics and the reports written from them (eval, run, compare)."""
