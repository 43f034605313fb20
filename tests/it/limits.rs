//! The client refuses oversized input locally with the server's own limits:
//! every payload limit `keel-client` mirrors equals the kernel's.

use keel_client::limits as client;
use keel_kernel::limits as server;

#[test]
fn client_and_server_agree_on_every_payload_limit() {
    let pairs = [
        ("GRPC_MESSAGE_BYTES_MAX", client::GRPC_MESSAGE_BYTES_MAX, server::GRPC_MESSAGE_BYTES_MAX),
        ("MANIFEST_BYTES_MAX", client::MANIFEST_BYTES_MAX, server::MANIFEST_BYTES_MAX),
        ("SIGNATURES_PER_REQUEST_MAX", client::SIGNATURES_PER_REQUEST_MAX, server::SIGNATURES_PER_REQUEST_MAX),
        ("POLICY_TEST_CASES_MAX", client::POLICY_TEST_CASES_MAX, server::POLICY_TEST_CASES_MAX),
        (
            "POLICY_SOURCE_BYTES_MAX",
            usize::try_from(client::POLICY_SOURCE_BYTES_MAX).unwrap_or(usize::MAX),
            server::POLICY_SOURCE_BYTES_MAX,
        ),
    ];
    for (name, client, server) in pairs {
        assert_eq!(client, server, "{name}: keel-client says {client}, the server {server}");
    }
}
