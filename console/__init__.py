"""The staff console: review conversations, correct and export training data, follow tickets."""
