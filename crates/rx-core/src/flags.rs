//! Function flags, with their Redis names. Pure.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FunctionFlags(u8);

impl FunctionFlags {
    pub const NO_WRITES: FunctionFlags = FunctionFlags(1);
    pub const ALLOW_OOM: FunctionFlags = FunctionFlags(1 << 1);
    pub const ALLOW_STALE: FunctionFlags = FunctionFlags(1 << 2);
    pub const NO_CLUSTER: FunctionFlags = FunctionFlags(1 << 3);
    pub const ALLOW_CROSS_SLOT_KEYS: FunctionFlags = FunctionFlags(1 << 4);

    /// In the order Redis lists them.
    const NAMES: [(&'static str, FunctionFlags); 5] = [
        ("no-writes", Self::NO_WRITES),
        ("allow-oom", Self::ALLOW_OOM),
        ("allow-stale", Self::ALLOW_STALE),
        ("no-cluster", Self::NO_CLUSTER),
        ("allow-cross-slot-keys", Self::ALLOW_CROSS_SLOT_KEYS),
    ];

    pub fn empty() -> Self {
        FunctionFlags(0)
    }

    pub fn contains(self, other: FunctionFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: FunctionFlags) {
        self.0 |= other.0;
    }

    /// The flag named `name`, or `None` for an unknown name.
    pub fn from_name(name: &[u8]) -> Option<FunctionFlags> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, f)| *f)
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .iter()
            .filter(move |(_, f)| self.contains(*f))
            .map(|(n, _)| *n)
    }

    /// A function that may write must pass the write gates (replica, disk, min-replicas).
    pub fn may_write(self) -> bool {
        !self.contains(Self::NO_WRITES)
    }

    /// `no-writes` implies `allow-oom`, as in Redis.
    pub fn checks_oom(self) -> bool {
        !self.contains(Self::NO_WRITES) && !self.contains(Self::ALLOW_OOM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_list() {
        let mut f = FunctionFlags::empty();
        f.insert(FunctionFlags::from_name(b"allow-stale").unwrap());
        f.insert(FunctionFlags::from_name(b"no-writes").unwrap());
        assert_eq!(f.names().collect::<Vec<_>>(), ["no-writes", "allow-stale"]);
        assert!(FunctionFlags::from_name(b"No-Writes").is_none());
        assert!(FunctionFlags::from_name(b"bad").is_none());
    }

    #[test]
    fn no_writes_implies_allow_oom() {
        assert!(FunctionFlags::empty().checks_oom());
        assert!(!FunctionFlags::NO_WRITES.checks_oom());
        assert!(!FunctionFlags::ALLOW_OOM.checks_oom());
        assert!(FunctionFlags::ALLOW_OOM.may_write());
        assert!(!FunctionFlags::NO_WRITES.may_write());
    }
}
