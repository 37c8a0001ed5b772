"""The signalling plane: a sans-IO SIP core (parser, transactions, dialogs)
with thin asyncio transports at the edge. Never imports rtp/ or records/."""
