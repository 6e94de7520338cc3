"""The edge server: variant routes, Accept negotiation, hot-cache tiers, CDN headers."""
