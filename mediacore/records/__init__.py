"""CDRs and recording handles: a local durable journal first, Redis second,
so that Redis being down means delay, never loss. Never imports sip/ or rtp/."""
