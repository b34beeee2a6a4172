"""Producer-side library for notify-gateway (publishing, sessions)."""
