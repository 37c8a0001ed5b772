"""mediacore: a real-time SIP/RTP media server for service-number operators.

The planes (see docs/ and DESIGN.md): ``sip`` speaks SIP, ``calls`` is the
B2BUA, ``rtp`` moves media, ``records`` keeps CDRs and recording handles, and
``_codecs`` holds the compiled G.711 kernels they share.
"""

__version__ = "0.1.0"
