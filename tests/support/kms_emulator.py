"""moto's KMS server (pip install 'moto[server]'), with MessageType=DIGEST honoured.

moto (5.2.x, the newest at the time of writing) documents DIGEST as not implemented: it hashes
the 32-byte digest again before signing, which AWS KMS does not do. This launcher patches only
that: a DIGEST message of the right length is signed as the prehashed digest (and anything else
goes to moto unchanged), so the issuer's KMS signer meets KMS's real semantics.

Usage: python3 kms_emulator.py PORT   (listens on 127.0.0.1)
"""

import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from moto.kms import utils as kms_utils
from moto.kms.responses import KmsResponse
from moto.server import main

_original_sign = KmsResponse.sign


def _sign(self):
    if self._get_param("MessageType") != "DIGEST":
        return _original_sign(self)
    import base64
    import json

    key_id = self._get_param("KeyId")
    message = self._get_param("Message")
    algorithm = self._get_param("SigningAlgorithm")
    if isinstance(message, str):
        message = base64.b64decode(message)
    key = self.kms_backend.describe_key(key_id)
    private = key.private_key
    if not isinstance(private, kms_utils.ECDSAPrivateKey) or algorithm != "ECDSA_SHA_256":
        return _original_sign(self)
    if len(message) != 32:
        from moto.kms.exceptions import ValidationException

        raise ValidationException("Digest is invalid length for algorithm ECDSA_SHA_256.")
    signature = private.private_key.sign(message, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    return json.dumps(
        {
            "KeyId": key.arn,
            "Signature": base64.b64encode(signature).decode("ascii"),
            "SigningAlgorithm": algorithm,
        }
    )


KmsResponse.sign = _sign

if __name__ == "__main__":
    main(["-H", "127.0.0.1", "-p", sys.argv[1]])
