"""`migrabot console` and `migrabot demo`: the whole bot in a terminal, no Slack workspace needed."""
