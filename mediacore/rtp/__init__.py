"""The media plane: port allocation, the RTP relay, announcement playback and
the recording tap. Never imports sip/."""
