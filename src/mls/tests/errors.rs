//! The stable reason codes of [`MlsError`].

use super::*;

#[test]
fn reasons_are_snake_case() {
    let all = [
        MlsError::TooLarge { size: 1, max: 0 },
        MlsError::WrongEpoch {
            message_epoch: 1,
            current_epoch: 2,
        },
        MlsError::InvalidCommit("x".into()),
        MlsError::NotApplication,
    ];
    for e in all {
        assert!(
            e.reason()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
        );
    }
}
