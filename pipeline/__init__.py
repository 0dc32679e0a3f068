"""hintset's pipeline: find inputs, run annotators on workers, write outputs; the CLI lives here."""
