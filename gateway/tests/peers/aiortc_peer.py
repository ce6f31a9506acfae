#!/usr/bin/python3
"""An aiortc WebRTC peer for spanbridge's tests, driven over stdin/stdout with one JSON object
per line (the same commands as gateway/tests/browser/peer.mjs: offer, answer, accept,
wait-connected, record, stats, close).

    /usr/bin/python3 aiortc_peer.py --wav FILE.wav

Sends FILE.wav (looped) as its microphone; records what it receives, resampled to 8 kHz mono.
aioice never offers 127.0.0.1, so host addresses are patched to loopback (../shared/peers.md).
"""
import argparse
import asyncio
import base64
import json
import sys

import aioice.ice
import av
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]


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
                out({"type": "offer", "sdp": await peer.offer(m.get("codec"))})
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
