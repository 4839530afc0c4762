"""The voice gateway: phone calls in (Asterisk AudioSocket, WebSocket media), Vosk, Rasa, espeak-ng out."""
