//! The background jobs: what a job works on and the step it is at. The worker carries out one
//! step per claim; the step says which transaction comes next, the kind what a job that is given
//! up fails (its operation or its run).

named_enum! {
    // Stored in `ais_jobs.kind` (CHECK).
    /// What a job works on.
    pub enum JobKind("job kind") {
        /// Creates the UPS audience of an external audience and ends its operation.
        CreateAudience = "create_audience",
        /// Carries out an ingestion run, one stage per step.
        Ingest = "ingest",
    }
}

named_enum! {
    // Stored in `ais_jobs.step` (CHECK, which pairs each step with its kind).
    /// The step a job is at.
    pub enum JobStep("job step") {
        /// The one step of [`JobKind::CreateAudience`].
        Create = "create",
        /// DATASET_INGEST: read the files, stage the identities.
        Dataset = "dataset",
        /// PROFILE_STORE_INGEST: move the staged identities into the run's member set.
        Profile = "profile",
    }
}

impl JobKind {
    /// The step a new job of this kind starts at.
    pub const fn first_step(self) -> JobStep {
        match self {
            JobKind::CreateAudience => JobStep::Create,
            JobKind::Ingest => JobStep::Dataset,
        }
    }
}

impl JobStep {
    /// The kind of job this step belongs to.
    pub const fn kind(self) -> JobKind {
        match self {
            JobStep::Create => JobKind::CreateAudience,
            JobStep::Dataset | JobStep::Profile => JobKind::Ingest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_refused() {
        for kind in JobKind::ALL {
            assert_eq!(kind.as_str().parse::<JobKind>(), Ok(*kind));
            assert_eq!(kind.first_step().kind(), *kind);
        }
        for step in JobStep::ALL {
            assert_eq!(JobStep::try_from(step.as_str().to_owned()), Ok(*step));
        }
        let err = "unknown-step".parse::<JobStep>().unwrap_err();
        assert_eq!(err.to_string(), "'unknown-step' is not a job step");
    }
}
