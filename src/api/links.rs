//! OpenAPI links: which calls an answer leads to, and which of its values they take. Clients and
//! tools read them to follow a resource through its life (create, read, change, delete; an
//! external audience's operation, the audience, its runs); schemathesis' stateful phase builds
//! its call sequences from them. One table, applied to the generated document by operation id.

use utoipa::openapi::{link::LinkBuilder, OpenApi, RefOr};

/// From the answer `status` of operation `from`, each operation of `to` can be called with
/// `params` (path parameter, runtime expression).
struct Flow {
    from: &'static str,
    status: &'static str,
    to: &'static [&'static str],
    params: &'static [(&'static str, &'static str)],
}

const AUDIENCE_ID: &[(&str, &str)] = &[("id", "$response.body#/id")];
const EXTERNAL_ID: &[(&str, &str)] = &[("audienceId", "$response.body#/audienceId")];
/// An external audience's id is also the `id` of its UPS audience.
const UPS_OF_EXTERNAL: &[(&str, &str)] = &[("id", "$response.body#/audienceId")];
const EXTERNAL_CHANGES: &[&str] = &[
    "getExternalAudience",
    "patchExternalAudience",
    "startExternalAudienceRun",
    "listExternalAudienceRuns",
    "extendExternalAudienceTtl",
    "deleteExternalAudience",
];

const FLOWS: &[Flow] = &[
    Flow {
        from: "createAudience",
        status: "200",
        to: &[
            "getAudience",
            "replaceAudience",
            "patchAudience",
            "deleteAudience",
        ],
        params: AUDIENCE_ID,
    },
    Flow {
        from: "getAudience",
        status: "200",
        to: &["replaceAudience", "patchAudience", "deleteAudience"],
        params: AUDIENCE_ID,
    },
    Flow {
        from: "replaceAudience",
        status: "200",
        to: &["getAudience", "patchAudience", "deleteAudience"],
        params: AUDIENCE_ID,
    },
    Flow {
        from: "patchAudience",
        status: "200",
        to: &["getAudience", "replaceAudience", "deleteAudience"],
        params: AUDIENCE_ID,
    },
    Flow {
        from: "createAudienceMetaOnly",
        status: "200",
        to: &["getAudience", "patchAudience", "deleteAudience"],
        params: AUDIENCE_ID,
    },
    Flow {
        from: "createExternalAudience",
        status: "202",
        to: &["getExternalAudienceOperation"],
        params: &[("operationId", "$response.body#/operationId")],
    },
    Flow {
        from: "getExternalAudienceOperation",
        status: "200",
        to: EXTERNAL_CHANGES,
        params: EXTERNAL_ID,
    },
    Flow {
        from: "getExternalAudienceOperation",
        status: "200",
        to: &["getAudience"],
        params: UPS_OF_EXTERNAL,
    },
    Flow {
        from: "getExternalAudience",
        status: "200",
        to: EXTERNAL_CHANGES,
        params: EXTERNAL_ID,
    },
    Flow {
        from: "patchExternalAudience",
        status: "200",
        to: EXTERNAL_CHANGES,
        params: EXTERNAL_ID,
    },
    Flow {
        from: "startExternalAudienceRun",
        status: "200",
        to: &["getExternalAudienceRun"],
        params: &[
            ("audienceId", "$response.body#/audienceId"),
            ("runId", "$response.body#/runId"),
        ],
    },
    Flow {
        from: "startExternalAudienceRun",
        status: "200",
        to: &["listExternalAudienceRuns"],
        params: EXTERNAL_ID,
    },
    Flow {
        from: "extendExternalAudienceTtl",
        status: "200",
        to: &["listExternalAudienceRuns", "getExternalAudience"],
        params: EXTERNAL_ID,
    },
];

/// Adds the links of [`FLOWS`] to the responses they start from.
///
/// # Panics
/// When a flow names an operation or a response the document does not have: the table and the
/// handlers disagree, which the document's test catches.
pub fn document(doc: &mut OpenApi) {
    for flow in FLOWS {
        for target in flow.to {
            assert!(
                operation(doc, target).is_some(),
                "link to unknown operation {target}"
            );
        }
        let from = operation(doc, flow.from)
            .unwrap_or_else(|| panic!("link from unknown operation {}", flow.from));
        let Some(RefOr::T(response)) = from.responses.responses.get_mut(flow.status) else {
            panic!("{} has no inline {} response", flow.from, flow.status);
        };
        for target in flow.to {
            let link = flow
                .params
                .iter()
                .fold(LinkBuilder::new().operation_id(*target), |b, (n, v)| {
                    b.parameter(*n, *v)
                })
                .build();
            response.links.insert((*target).to_owned(), RefOr::T(link));
        }
    }
}

fn operation<'a>(
    doc: &'a mut OpenApi,
    id: &str,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    doc.paths.paths.values_mut().find_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        .find(|op| op.operation_id.as_deref() == Some(id))
    })
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::ParameterIn;

    /// Every link passes exactly the path parameters its target takes.
    #[test]
    fn links_fill_the_path_parameters_of_their_targets() {
        let doc = crate::openapi::document();
        let mut checked = 0;
        for item in doc.paths.paths.values() {
            let ops = [&item.get, &item.put, &item.post, &item.delete, &item.patch];
            for op in ops.into_iter().flatten() {
                for response in op.responses.responses.values() {
                    let utoipa::openapi::RefOr::T(response) = response else {
                        continue;
                    };
                    for link in response.links.values() {
                        let utoipa::openapi::RefOr::T(link) = link else {
                            continue;
                        };
                        let target = doc
                            .paths
                            .paths
                            .values()
                            .flat_map(|i| [&i.get, &i.put, &i.post, &i.delete, &i.patch])
                            .flatten()
                            .find(|t| t.operation_id.as_deref() == Some(&link.operation_id))
                            .unwrap();
                        let mut wanted: Vec<String> = target
                            .parameters
                            .iter()
                            .flatten()
                            .filter_map(|p| match p {
                                utoipa::openapi::RefOr::T(p)
                                    if matches!(p.parameter_in, ParameterIn::Path) =>
                                {
                                    Some(p.name.clone())
                                }
                                _ => None,
                            })
                            .collect();
                        wanted.sort();
                        let given: Vec<String> = link.parameters.keys().cloned().collect();
                        assert_eq!(
                            given,
                            wanted,
                            "{} -> {}",
                            op.operation_id.as_deref().unwrap_or_default(),
                            link.operation_id
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 30, "{checked}");
    }
}
