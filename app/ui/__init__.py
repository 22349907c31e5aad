"""The page's parts: what it shows, one tab's conversation, the chat callbacks, the batch tab and its files."""
