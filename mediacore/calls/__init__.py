"""The B2BUA: one Call per inbound INVITE, the number plan and caller-ID
privacy. It decides; the sip/, rtp/ and records/ planes act."""
