"""CoAP southbound (RFC 7252, aiocoap): GET polling and Observe for constrained IP devices.

``client``   CoapPoller / CoapObserver: schedule, re-registration, counting.
``payload``  device payloads -> Records: SenML JSON/CBOR, or plain JSON/CBOR by profile.
``cli``      ``sentryline sensor coap get|observe`` for field checks.
"""
