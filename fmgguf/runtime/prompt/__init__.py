"""What a model is given and how its text is cut: chat templates, chat-or-raw, the FIM prompt, the one FIM
rule and the one FIM post-processor."""
