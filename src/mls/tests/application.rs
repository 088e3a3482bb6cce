//! Application messages: what the DS accepts as one and what it refuses.

use super::*;

#[test]
fn application_messages() {
    let mut w = world();
    let ct =
        w.ga.create_message(&w.alice.provider, &w.alice.signer, b"hi")
            .expect("message");
    let ct = bytes(&ct);
    assert_eq!(
        check_application(CH.as_bytes(), &ct),
        Ok(AppMessage { epoch: 1 })
    );
    assert_eq!(check_application(b"other", &ct), Err(MlsError::WrongGroup));
    assert_eq!(
        check_application(CH.as_bytes(), &w.add.commit),
        Err(MlsError::NotApplication)
    );
    assert_eq!(
        check_application(CH.as_bytes(), &w.add.group_info),
        Err(MlsError::NotApplication)
    );
    assert_eq!(
        check_application(CH.as_bytes(), b"xx"),
        Err(MlsError::WrongProtocolVersion)
    );
    assert_eq!(
        check_application(CH.as_bytes(), b"\x00\x01\x00\x02"),
        Err(MlsError::Malformed)
    );
    // An application message passed as a commit.
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&w.accepted.state),
            None,
            &ct,
            None,
            &w.add.group_info,
            now()
        ),
        Err(MlsError::NotPublicMessage)
    );
}
