-- astra 0.4.0: one page of a search, without pgstac's formatting.
--
-- astra.search_page(search) answers like pgstac.search(search) -- the same where clause,
-- order, partitions, tokens and has-next/has-prev rules, read from the same pgstac
-- functions -- but returns the rows still dehydrated: [collection, id, GeoJSON geometry,
-- content] for each, hydrated by the API against the collection base items it caches.
-- It also skips search()'s per-search write to pgstac.searches (a commit on every query),
-- reads the token's item by its key (pgstac's get_token_record plans a sequential scan of
-- every partition here, ~130 ms at 1M items), and runs without JIT: the planner costs a
-- LIMIT-ed scan of a partition far above jit_above_cost, and compiling takes longer than
-- the query.

CREATE OR REPLACE FUNCTION astra.search_page(_search jsonb) RETURNS jsonb AS $$
DECLARE
    collection_ids text[] := pgstac.to_text_array(_search->'collections');
    _where text := pgstac.stac_search_to_where(_search);
    orderby text := pgstac.sort_sqlorderby(_search, FALSE, '{collection,id}', collection_ids);
    search_where pgstac.search_wheres%ROWTYPE;
    _limit int := pgstac.search_limit(_search);
    token text := _search->>'token';
    token_parts text[];
    token_prev boolean;
    token_item pgstac.items%ROWTYPE;
    token_collection text;
    token_id text;
    token_where text;
    rows jsonb;
    keys jsonb;
    out_len int;
    has_prev boolean := FALSE;
    has_next boolean := FALSE;
    next text;
    prev text;
    result jsonb;
BEGIN
    search_where := pgstac.where_stats(_where, FALSE, _search->'conf');
    IF token IS NOT NULL THEN
        -- the checks and messages of pgstac.get_token_record
        token_parts := string_to_array(lower(token), ':');
        IF cardinality(token_parts) <> 3
            OR token_parts[1] NOT IN ('next', 'prev')
            OR token_parts[2] !~ '^([0-9a-f]{2})+$'
            OR token_parts[3] !~ '^([0-9a-f]{2})+$'
        THEN
            RAISE EXCEPTION 'Invalid paging token: %', token;
        END IF;
        token_prev := token_parts[1] = 'prev';
        token_collection := convert_from(decode(token_parts[2], 'hex'), 'UTF8');
        token_id := convert_from(decode(token_parts[3], 'hex'), 'UTF8');
        SELECT * INTO token_item FROM pgstac.items i
        WHERE i.collection = token_collection AND i.id = token_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'Could not find item using token: %', token;
        END IF;
        token_where := pgstac.get_token_filter(
            _search->'sortby', token_item, token_prev, FALSE, collection_ids
        );
        IF token_prev THEN
            has_next := TRUE;
            orderby := pgstac.sort_sqlorderby(_search, TRUE, '{collection,id}', collection_ids);
        ELSE
            has_prev := TRUE;
        END IF;
    END IF;

    SELECT
        jsonb_agg(jsonb_build_array(
            i.collection, i.id, ST_AsGeoJSON(i.geometry, 20), i.content
        )),
        jsonb_agg(jsonb_build_array(i.collection, i.id))
    INTO rows, keys
    FROM pgstac.search_rows(
        concat_ws(' AND ', _where, token_where), orderby, search_where.partitions, _limit + 1
    ) AS i;

    IF token_prev THEN
        rows := pgstac.flip_jsonb_array(rows);
        keys := pgstac.flip_jsonb_array(keys);
    END IF;
    IF keys->0->>0 = token_item.collection AND keys->0->>1 = token_item.id THEN
        rows := rows - 0;
        keys := keys - 0;
    ELSIF keys->-1->>0 = token_item.collection AND keys->-1->>1 = token_item.id THEN
        rows := rows - -1;
        keys := keys - -1;
    END IF;
    IF jsonb_array_length(rows) = _limit + 1 THEN
        IF token_prev THEN
            has_prev := TRUE;
            rows := rows - 0;
            keys := keys - 0;
        ELSE
            has_next := TRUE;
            rows := rows - -1;
            keys := keys - -1;
        END IF;
    END IF;
    out_len := coalesce(jsonb_array_length(rows), 0);

    IF has_next AND out_len > 0 THEN
        next := pgstac.page_token(keys->-1->>0, keys->-1->>1);
    END IF;
    IF has_prev AND (out_len > 0 OR _limit = 0) THEN
        prev := CASE WHEN out_len > 0
            THEN pgstac.page_token(keys->0->>0, keys->0->>1)
            ELSE pgstac.page_token(token_item.collection, token_item.id)
        END;
        IF lower(concat('prev:', prev)) IS NOT DISTINCT FROM lower(_search->>'token') THEN
            prev := NULL;
        END IF;
    END IF;

    result := jsonb_build_object('rows', coalesce(rows, '[]'::jsonb), 'numberReturned', out_len);
    IF pgstac.context(_search->'conf') != 'off' THEN
        result := result || jsonb_strip_nulls(jsonb_build_object(
            'numberMatched', coalesce(search_where.total_count, search_where.estimated_count)
        ));
    END IF;
    RETURN result || jsonb_strip_nulls(jsonb_build_object('next', next, 'prev', prev));
END;
$$ LANGUAGE PLPGSQL SET search_path TO pgstac, public SET jit TO off;
