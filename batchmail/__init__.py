"""batchmail: one personalized message per CSV row, through one reused SMTP session."""

__version__ = "1.0.0"
