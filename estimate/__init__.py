"""Pre-flight estimate of a fine-tuning job: trained tokens, cost and duration, and the budget gate."""
