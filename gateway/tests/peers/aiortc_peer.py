#!/usr/bin/python3
"""An aiortc WebRTC peer for spanbridge's tests, driven over stdin/stdout with one JSON object
per line (the same commands as gateway/tests/browser/peer.mjs: offer, answer, accept,
wait-connected, record, stats, dtmf, close).

    /usr/bin/python3 aiortc_peer.py --wav FILE.wav

Sends FILE.wav (looped) as its microphone; records what it receives, resampled to 8 kHz mono.
aioice never offers 127.0.0.1, so host addresses are patched to loopback (../shared/peers.md).

aiortc has no DTMF sender: `offer` with "telephone_event": true adds telephone-event/8000
(payload type 101) to the offer it hands out, and `dtmf` then sends RFC 4733 events (RFC 4733
section 2.5: a marked first packet, duration growing every 20 ms, three end packets) in place of
audio packets of the sender's own stream (same SSRC and sequence numbering). RFC 4733 events
it receives (payload type 101) are collected, one digit per event timestamp; `digits` returns
them.
"""
import argparse
import asyncio
import base64
import json
import sys

import aioice.ice
import av
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc import rtcdtlstransport, rtcrtpsender
from aiortc.contrib.media import MediaPlayer

aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]


class Dtmf:
    """RFC 4733 packets waiting to replace the next audio packets."""

    pt = 101
    queue = []  # (event, packets of 20 ms, gap packets)
    current = None  # [event, sent, total, start_ts, end_sent]
    gap = 0

    @classmethod
    def take(cls, ts):
        if cls.current is None:
            if cls.gap > 0:
                cls.gap -= 1
                return None
            if not cls.queue:
                return None
            ev, total, gap = cls.queue.pop(0)
            cls.current = [ev, 0, total, ts, 0]
            cls.gap = gap
        ev, sent, total, start, end_sent = cls.current
        if sent < total:
            sent += 1
            cls.current[1] = sent
            duration = 160 * sent
            e_bit = 0
        else:
            duration = 160 * total
            e_bit = 0x80
            cls.current[4] += 1
            if cls.current[4] >= 3:
                cls.current = None
        payload = bytes([ev, e_bit | 10, (duration >> 8) & 0xFF, duration & 0xFF])
        return payload, start, 1 if sent == 1 and not e_bit else 0


class DtmfRtpPacket(rtcrtpsender.RtpPacket):
    def serialize(self, *args, **kwargs):
        d = Dtmf.take(self.timestamp)
        if d is not None:
            self.payload, self.timestamp, self.marker = d
            self.payload_type = Dtmf.pt
        return super().serialize(*args, **kwargs)


rtcrtpsender.RtpPacket = DtmfRtpPacket

RECEIVED = {"digits": "", "seen": set()}
_route_rtp = rtcdtlstransport.RtpRouter.route_rtp


def route_rtp(self, packet):
    if packet.payload_type == Dtmf.pt:
        p = packet.payload
        if len(p) >= 4 and p[0] <= 15 and (p[1] & 0x80):
            key = (packet.ssrc, packet.timestamp)
            if key not in RECEIVED["seen"]:
                RECEIVED["seen"].add(key)
                RECEIVED["digits"] += "0123456789*#ABCD"[p[0]]
        return None
    return _route_rtp(self, packet)


rtcdtlstransport.RtpRouter.route_rtp = route_rtp
EVENTS = {**{str(i): i for i in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}


def add_telephone_event(sdp):
    lines = sdp.split("\r\n")
    outl = []
    for line in lines:
        if line.startswith("m=audio "):
            line += " 101"
            outl.append(line)
            outl.append("a=rtpmap:101 telephone-event/8000")
            continue
        outl.append(line)
    return "\r\n".join(outl)


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Peer:
    def __init__(self, wav):
        self.pc = RTCPeerConnection()
        self.player = MediaPlayer(wav, loop=True)
        self.recording = False
        self.samples = bytearray()
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        self.connected = asyncio.Event()
        self.reader = None

        @self.pc.on("connectionstatechange")
        async def on_state():
            if self.pc.connectionState == "connected":
                self.connected.set()

        @self.pc.on("track")
        def on_track(track):
            self.reader = asyncio.ensure_future(self.read(track))

    async def read(self, track):
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            if not self.recording:
                continue
            for f in self.resampler.resample(frame):
                self.samples += bytes(f.planes[0])[: f.samples * 2]

    def prefer(self, codec):
        if not codec:
            return
        caps = RTCRtpSender.getCapabilities("audio").codecs
        want = [c for c in caps if c.mimeType.lower() == ("audio/" + codec).lower()]
        for t in self.pc.getTransceivers():
            t.setCodecPreferences(want)

    async def offer(self, codec):
        self.pc.addTransceiver(self.player.audio, direction="sendrecv")
        self.prefer(codec)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, sdp, codec):
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for t in self.pc.getTransceivers():
            t.sender.replaceTrack(self.player.audio)
            t.direction = "sendrecv"
        self.prefer(codec)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wav", required=True)
    a = ap.parse_args()
    peer = Peer(a.wav)
    out({"type": "ready"})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            m = json.loads(line)
        except ValueError as e:
            out({"type": "error", "message": "bad json: %s" % e})
            continue
        try:
            cmd = m.get("cmd")
            if cmd == "offer":
                sdp = await peer.offer(m.get("codec"))
                if m.get("telephone_event"):
                    sdp = add_telephone_event(sdp)
                out({"type": "offer", "sdp": sdp})
            elif cmd == "digits":
                out({"type": "digits", "digits": RECEIVED["digits"]})
            elif cmd == "dtmf":
                packets = max(1, int(m.get("duration", 100)) // 20)
                gap = max(1, int(m.get("gap", 70)) // 20)
                for t in m["tones"]:
                    Dtmf.queue.append((EVENTS[t.upper()], packets, gap))
                out({"type": "ok"})
            elif cmd == "answer":
                await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=m["sdp"], type="answer"))
                out({"type": "ok"})
            elif cmd == "accept":
                out({"type": "answer", "sdp": await peer.accept(m["sdp"], m.get("codec"))})
            elif cmd == "wait-connected":
                await asyncio.wait_for(peer.connected.wait(), 10)
                out({"type": "connected"})
            elif cmd == "record":
                peer.samples = bytearray()
                peer.recording = True
                await asyncio.sleep(float(m.get("seconds", 3)))
                peer.recording = False
                out({"type": "recorded", "rate": 8000, "pcm": base64.b64encode(bytes(peer.samples)).decode()})
            elif cmd == "stats":
                st = await peer.pc.getStats()
                out({"type": "stats", "stats": {k: str(v) for k, v in st.items()}})
            elif cmd == "close":
                await peer.pc.close()
                out({"type": "closed"})
                return
            else:
                out({"type": "error", "message": "unknown cmd %s" % cmd})
        except Exception as e:  # noqa: BLE001 - reported to the test
            out({"type": "error", "message": "%s: %s" % (type(e).__name__, e)})


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    except asyncio.TimeoutError:
        sys.stderr.write("aiortc_peer: 60 s watchdog\n")
        sys.exit(3)
