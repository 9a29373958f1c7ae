"""The report: the document writer, its sections, the findings, figures and `rmtension compare`."""
