"""``pinhole webhooks``: image events POSTed to the app's endpoints, signed the way
the Standard Webhooks specification says, retried for hours, dead-lettered with
the reason when an endpoint stays down (``webhooks.dispatcher``)."""
